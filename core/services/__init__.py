"""Domain logic shared by the web UI, the JSON API, jobs and plugins.

Services validate, write inside one transaction, and emit domain events that are
delivered after commit. Controllers stay thin: parse the request, call a service,
render the result.
"""
