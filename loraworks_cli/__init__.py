"""`loraworks`: the command-line client of a Loraworks server's JSON API (standard library only)."""
