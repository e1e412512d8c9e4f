from django.urls import path

from . import views

app_name = "catalog"
urlpatterns = [
    path("", views.home, name="home"),
    path("search/", views.search, name="search"),
    path("category/<int:pk>/", views.category, name="category"),
    path("product/<int:pk>/", views.product_detail, name="product"),
]
