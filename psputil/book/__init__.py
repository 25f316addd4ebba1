"""The book layer: page helpers for the notebooks, figures, HTML blocks, the widget JavaScript, the CLI.

Nothing below this layer imports it.
"""
