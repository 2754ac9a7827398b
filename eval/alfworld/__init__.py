"""ALFWorld: the games, the real TextWorld environment, demonstrations and a ReAct agent."""
