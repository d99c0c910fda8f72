import pytest

pytestmark = pytest.mark.django_db


def test_openapi_describes_the_endpoints(client):
    document = client.get("/v1/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "http://testserver/v1"}]
    assert set(document["paths"]) == {
        "/models",
        "/models/{model}",
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/classifications",
        "/responses",
        "/responses/{response_id}",
        "/responses/{response_id}/cancel",
        "/responses/{response_id}/input_items",
        "/batches",
        "/batches/{batch_id}",
        "/batches/{batch_id}/cancel",
        "/files/{file_id}/content",
        "/files",
        "/files/{file_id}",
        "/fine_tuning/jobs",
        "/fine_tuning/jobs/{job_id}",
        "/fine_tuning/jobs/{job_id}/events",
        "/fine_tuning/jobs/{job_id}/cancel",
    }
    assert set(document["paths"]["/fine_tuning/jobs"]) == {"get", "post"}
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages", "stream", "top_k"} <= set(chat["properties"])
    assert chat["additionalProperties"] is False
    assert "429" in document["paths"]["/chat/completions"]["post"]["responses"]
    responses = document["components"]["schemas"]["ResponseRequest"]
    assert {"input", "previous_response_id", "store", "text"} <= set(responses["properties"])


def test_the_api_page_shows_examples_with_this_sites_url(client):
    body = client.get("/docs/api/").content.decode()
    assert '<code id="base-url">http://testserver/v1</code>' in body
    assert 'OpenAI(base_url="http://testserver/v1"' in body
    assert "curl http://testserver/v1/chat/completions" in body
