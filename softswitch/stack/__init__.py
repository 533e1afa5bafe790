"""The local telephony stack: PostgreSQL and RabbitMQ on the host, Asterisk and Kamailio in a
Debian sid chroot (neither Asterisk 22 nor Kamailio 6.1 is packaged for Debian 12)."""
