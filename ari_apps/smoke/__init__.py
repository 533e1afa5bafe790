"""Smoke app: answers, beeps, hangs up; proves SIP -> Kamailio -> Asterisk -> ARI works."""
