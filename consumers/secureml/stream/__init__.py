"""Reading the event stream: sources (Kafka partitions, embedded segments), decoding, dead letters."""
