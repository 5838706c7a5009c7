"""The client: talks to the network (or to the in-process mock network with the same rules)."""
