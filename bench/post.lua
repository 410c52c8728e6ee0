-- wrk: POST a small JSON body with the bearer token from the environment.
wrk.method = "POST"
wrk.body = '{"order": {"id": 42, "items": [{"sku": "A-1", "qty": 2}]}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
