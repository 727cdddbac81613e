"""Dock widgets, one per workflow step plus one with every step in tabs; all thin views on the controller."""
