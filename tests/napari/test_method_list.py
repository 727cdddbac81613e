"""napari's method and encoder lists are the registries': a method registered by a plug-in is offered too."""

from phenossl.methods.registry import MethodSpec, method_names, method_spec, register_method, unregister_method
from phenossl.models.registry import encoder_names


def test_the_method_list_is_the_registry_with_each_summary_as_tooltip(qtbot):
    from qtpy.QtCore import Qt

    from phenossl.napari.widgets.train_widget import TRAIN_ROWS, method_combo

    register_method(MethodSpec("align", "toy: align the two views", "align",
                               branch="phenossl.methods.simclr:SimCLRBranch",
                               params_class="phenossl.methods.params:SimCLRParams"))
    try:
        combo = method_combo()
        qtbot.addWidget(combo)
        offered = [combo.itemData(i) for i in range(combo.count())]
        assert offered == list(method_names()) and "align" in offered
        tips = [combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())]
        assert tips == [method_spec(name).summary for name in offered]
        assert combo.currentData() == "mocov2"
    finally:
        unregister_method("align")
    encoder_row = next(row for row in TRAIN_ROWS if row.name == "encoder")
    assert [value for _, value in encoder_row.choices] == list(encoder_names())
