"""AWS-compatible services served beside Lambda on the same port (see DESIGN.md, "Services beside Lambda")."""
