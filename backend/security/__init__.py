"""Who is calling, as which app, and what that app may do.

- `secrets`: tokens read from files or the environment, never printed.
- `identity`: one listener's rule from credentials (token, client certificate) to an app ID.
- `tls`: server credentials whose PEM files are picked up again when they change.
- `policy`: which apps may call (activities, child workflows) or manage another app.
- `interceptor`: applies identity to every RPC; servicers read `caller()`.
"""
