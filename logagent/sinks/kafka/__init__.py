"""The Kafka sink: the producer, its topic limits and the reachability probe."""
