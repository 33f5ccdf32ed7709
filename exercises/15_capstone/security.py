"""Keys, the shared rate limit and the request-id middleware (a suggested module).

TODO: a dependency for every /v1/ route that checks the key (lesson: "Reading a product
brief") and counts the request in Valkey (lesson: "A rate limit every worker shares"),
and a pure ASGI middleware that adds X-Request-ID and X-Served-By to every answer
(lesson: "Readiness, request ids and metrics").
"""
