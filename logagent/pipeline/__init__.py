"""Between sources and sinks: the batch that flows, and the bounded buffer that carries it."""
