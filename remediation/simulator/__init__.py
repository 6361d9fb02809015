"""A stand-in S1SP: the anchor-slot API of the contract over SQLite, with seeded fault injection."""
