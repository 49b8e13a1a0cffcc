"""HTTP surfaces: the app factory, routes, the staff console."""
