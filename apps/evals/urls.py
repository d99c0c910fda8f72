from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="evals-index"),
    path("upload/", views.upload, name="evals-upload"),
    path("demo/", views.demo, name="evals-demo"),
    path("add/", views.add_from_chat, name="evals-add"),
    path("add/save/", views.add_from_chat_save, name="evals-add-save"),
    path("demo/demo-eval.jsonl", views.demo_file, name="evals-demo-file"),
    path("<uuid:eval_set_id>/", views.eval_set_detail, name="evals-set"),
    path("<uuid:eval_set_id>/delete/", views.eval_set_delete, name="evals-set-delete"),
    path("<uuid:eval_set_id>/runs/", views.eval_run_create, name="evals-run-create"),
    path("runs/<uuid:run_id>/", views.eval_run_detail, name="evals-run"),
    path("runs/<uuid:run_id>/cancel/", views.eval_run_cancel, name="evals-run-cancel"),
    path(
        "runs/<uuid:run_id>/compare/<uuid:other_id>/",
        views.eval_run_compare,
        name="evals-compare",
    ),
    path("<uuid:eval_set_id>/compare/", views.eval_run_compare_pick, name="evals-compare-pick"),
]
