import pytest

from similarity import services
from tests import factories


@pytest.mark.django_db(transaction=True)
def test_saved_product_is_indexed_and_found():
    a = factories.product("Red cotton bath towel", description="Soft absorbent towel", image=factories.png_bytes())
    b = factories.product(
        "Blue cotton bath towel", description="Absorbent towel", image=factories.png_bytes((30, 30, 200))
    )
    factories.product("Analog wrist watch for men", description="Steel strap watch")
    result = services.find_similar(a, limit=2)
    assert result.ok
    assert result.hits[0].object == b
