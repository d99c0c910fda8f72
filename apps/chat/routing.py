from django.urls import path

from .consumers import ChatConsumer, GenerationConsumer

websocket_urlpatterns = [
    path("ws/chat/<uuid:conversation_id>/", ChatConsumer.as_asgi()),
    path("ws/generations/<uuid:generation_id>/", GenerationConsumer.as_asgi()),
]
