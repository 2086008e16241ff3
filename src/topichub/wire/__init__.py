"""The wire layer: text frames <-> typed actions and events. Pure functions, no I/O."""
