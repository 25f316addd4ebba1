"""Beyond the paper: do sparse, high-entropy features transfer better? (probes, units, study, analysis)"""
