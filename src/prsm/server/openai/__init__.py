"""The OpenAI wire format on `prsm serve`: `POST /v1/chat/completions` and `POST /v1/completions`
(the model list and embeddings are in `prsm.server.routes`), so that any OpenAI client (the
official SDKs, LangChain, curl) works unchanged.

One query path, two wire formats: a request here becomes the same `Ask` as
`POST /api/v1/query` and goes through the same authentication, admission, priorities, events,
usage hashes, metrics and traces. Only the shapes differ: OpenAI's responses, its stream
chunks (`data: {...}` then `data: [DONE]`) and its errors (`{"error": {message, type, param,
code}}`, a validation failure as 400 `invalid_request_error`).

The pieces: `wire` (request bodies), `translate` (requests to an `Ask`, generations to
OpenAI's answers), `stream` (the chunks), `schema` (the OpenAPI description); the routes are
`prsm.server.routes.openai`.
"""
