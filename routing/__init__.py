"""Routing service: regex routes from PostgreSQL decide every call Kamailio sees."""
