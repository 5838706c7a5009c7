"""The event store on SAFE data, the CQRS/DDD library, the NoteBook example and the web UI."""
