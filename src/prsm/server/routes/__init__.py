"""The API's routes, one module per part, each a function of `ApiServices` that returns a
router: `query` (`POST /api/v1/query`), `jobs` (`/api/v1/jobs`, `/api/v1/batches`), `probes`
(`/health`, `/ready`, `/started`, `/metrics`), `openai` (chat completions and completions),
`models` (`/v1/models`), `embeddings` (`/v1/embeddings`); the Responses API is
`prsm.server.responses_api`. The OpenAI wire format's pieces are `prsm.server.openai`.
`openapi` holds what their documentation shares."""
