"""Multi-replica tests: several server processes sharing one MongoDB database."""
