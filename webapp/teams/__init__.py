"""Teams: who belongs to which team, the request's current team, and the one helper that scopes querysets to it."""
