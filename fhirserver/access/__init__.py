"""The access policy (who may see what). Until SMART (issue 6) lands, the API is open."""
