"""The paper's experiments: setups per profile, the stages and their cached runs, the analyses, the claims."""
