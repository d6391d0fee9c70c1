"""The signed-in home page: what the current team has, at a glance."""
