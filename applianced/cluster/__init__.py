"""Cluster mode: several appliances sharing one ban list through PostgreSQL."""
