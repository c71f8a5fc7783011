"""The pure core: the Workspace object, projection, the container recipe, conditions
and the planner. No I/O and no adapter imports (checked by lint-imports)."""
