-- POST /api/v1/tasks with a small task body: one durable create per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title":"benchmark task","details":"created by make bench-api","priority":"normal","labels":["bench"]}'
