"""Pictures: attention maps, explanations, the demo's drawing."""
