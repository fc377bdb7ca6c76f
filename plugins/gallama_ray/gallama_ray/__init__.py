"""gallama-ray: a worker launcher that places model instances on a Ray cluster (see docs/scaling.md)."""
