"""Lambda function URLs: their configurations (``configs``) and the HTTP endpoint that serves them
(``serving``: routing, authorization, the payload format 2.0 event, the response mapping and CORS)."""
