"""Where independent runs go: executors (in-process, process pool, Ray), the sweep driver, the run context."""
