"""The brain: responders (offline and LLM), memory, tools, and the knowledge base."""
