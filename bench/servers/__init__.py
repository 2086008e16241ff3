"""Baseline servers for the fan-out comparison: each speaks the subset of topichub's wire
protocol the fan-out load uses (``connected``, ``subscribe``, ``message``) and builds the
same event bytes topichub would, so the load generator and the bytes are the same."""
