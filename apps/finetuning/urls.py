from django.urls import path

from . import views

urlpatterns = [
    path("", views.finetuning_index, name="finetuning-index"),
    path("datasets/", views.dataset_upload, name="finetuning-dataset-upload"),
    path("datasets/demo/", views.dataset_demo, name="finetuning-dataset-demo"),
    path(
        "datasets/demo-classification/",
        views.dataset_demo_classification,
        name="finetuning-dataset-demo-classification",
    ),
    path("datasets/<uuid:dataset_id>/", views.dataset_detail, name="finetuning-dataset"),
    path(
        "datasets/<uuid:dataset_id>/delete/",
        views.dataset_delete_view,
        name="finetuning-dataset-delete",
    ),
    path("demo/<str:name>", views.demo_file, name="finetuning-demo-file"),
    path("jobs/", views.job_create, name="finetuning-job-create"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="finetuning-job"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel, name="finetuning-job-cancel"),
    path(
        "jobs/<uuid:job_id>/delete-model/", views.model_delete_view, name="finetuning-model-delete"
    ),
]
