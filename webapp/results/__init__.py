"""A finished job's results: parameter savings, before/after eval, compare, downloads and the playground."""
