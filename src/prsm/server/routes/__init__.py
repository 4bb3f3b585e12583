"""The API's routes, one module per part, each a function of `ApiServices` that returns a
router: `query` (`POST /api/v1/query`), `jobs` (`/api/v1/jobs`, `/api/v1/batches`), `probes`
(`/health`, `/ready`, `/started`, `/metrics`); the OpenAI routes are in
`prsm.server.openai_api`. `openapi` holds what their documentation shares."""
