"""rawws: WebSockets (RFC 6455) from scratch, standard library only."""
