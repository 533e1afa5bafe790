"""Call events: typed models, the transactional outbox, the relay to RabbitMQ, and CDRs."""
