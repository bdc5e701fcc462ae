"""Admission: a validating webhook (Kopf) asking a real OPA server for the decision."""
