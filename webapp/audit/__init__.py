"""The audit log: who did what to a team's things, when and from where (sign-ins, API tokens, jobs, datasets,
downloads). Admins read every row in the admin; a team's owners read their team's rows on the team page."""
