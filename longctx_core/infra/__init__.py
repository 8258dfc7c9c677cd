"""What every stage shares: run folders (`layout`: the paths; `runs`: preparing one), the local Ray runtime
(`runtime`), CPU and GPU resources (`resources`), metrics files and Ray metrics (`metrics`), plots
(`plotting`)."""
