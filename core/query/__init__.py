"""Questions asked of an index: text and image search, relevance feedback, labelled sets."""
