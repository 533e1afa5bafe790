"""The admin HTTP API: routes, accounts, directory, ACD, 112 pool and live views, with tokens."""
