"""PRImA PAGE-XML loading, category mapping, COCO conversion tool and registration."""

import importlib.util
import json
import os

import pytest
from PIL import Image

import dla_kd  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from dla_kd.data import CorruptAnnotationError, DatasetNotFoundError, get_categories, load_layout_coco_json
from dla_kd.data.prima import load_prima_page_xml, parse_page_xml, split_records

NS_2010 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2010-03-19"
NS_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
CLASSES = ["TextRegion", "ImageRegion", "TableRegion", "MathsRegion", "SeparatorRegion", "OtherRegion"]


def _points_2010(*xy):
    return "<Coords>" + "".join(f'<Point x="{x}" y="{y}"/>' for x, y in xy) + "</Coords>"


def _points_2019(*xy):
    return '<Coords points="' + " ".join(f"{x},{y}" for x, y in xy) + '"/>'


def _box(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def page_2010(image="00000086.tif", width=200, height=300):
    regions = [
        ("TextRegion", 'type="heading"', _box(10, 10, 100, 40)),
        ("ImageRegion", "", _box(10, 50, 90, 120)),
        ("GraphicRegion", "", _box(100, 50, 150, 80)),
        ("ChartRegion", "", _box(100, 90, 150, 120)),
        ("SeparatorRegion", "", _box(10, 130, 190, 134)),
        ("NoiseRegion", "", _box(0, 290, 20, 300)),
        ("FrameRegion", "", _box(120, 140, 190, 190)),
        ("TextRegion", 'type="paragraph"', _box(10, 200, 250, 280)),  # sticks out right: clipped to 200
    ]
    body = "".join(f'<{n} id="r{i}" {a}>{_points_2010(*pts)}</{n}>' for i, (n, a, pts) in enumerate(regions))
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><PcGts xmlns="{NS_2010}"><Metadata><Creator>t</Creator></Metadata>'
        f'<Page imageFilename="{image}" imageWidth="{width}" imageHeight="{height}">{body}</Page></PcGts>'
    )


def page_2019(image="scan_2.png", width=120, height=100):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><PcGts xmlns="{NS_2019}"><Metadata/>'
        f'<Page imageFilename="{image}" imageWidth="{width}" imageHeight="{height}">'
        '<ReadingOrder><OrderedGroup id="g"><RegionRefIndexed index="0" regionRef="t1"/></OrderedGroup></ReadingOrder>'
        f'<TableRegion id="t1">{_points_2019(*_box(5, 5, 60, 50))}'
        f'<TextRegion id="cell" type="paragraph">{_points_2019(*_box(6, 6, 30, 20))}'
        f'<TextLine id="l1">{_points_2019(*_box(6, 6, 30, 10))}</TextLine></TextRegion></TableRegion>'
        f'<MathsRegion id="m1">{_points_2019(*_box(70, 5, 110, 20))}</MathsRegion>'
        f'<LineDrawingRegion id="d1">{_points_2019(*_box(70, 30, 110, 60))}</LineDrawingRegion>'
        f'<ChemRegion id="c1">{_points_2019(*_box(70, 70, 110, 90))}</ChemRegion>'
        f'<SeparatorRegion id="s1">{_points_2019((5, 60), (5, 90))}</SeparatorRegion>'  # 2 points: dropped
        f'<SeparatorRegion id="s2">{_points_2019((8, 60), (8, 90), (8, 75))}</SeparatorRegion>'  # zero width
        "</Page></PcGts>"
    )


def write_prima(root, pages):
    """pages: {xml name: (xml text, image file name or None, (w, h))} under root/XML, root/Images."""
    os.makedirs(os.path.join(root, "XML"), exist_ok=True)
    os.makedirs(os.path.join(root, "Images"), exist_ok=True)
    for xml_name, (text, image, size) in pages.items():
        with open(os.path.join(root, "XML", xml_name), "w", encoding="utf-8") as f:
            f.write(text)
        if image:
            Image.new("RGB", size, "white").save(os.path.join(root, "Images", image))
    return os.path.join(root, "XML"), os.path.join(root, "Images")


def _two_pages(tmp_path):
    return write_prima(
        str(tmp_path),
        {
            "pc-00000086.xml": (page_2010(), "00000086.tif", (200, 300)),
            "scan_2.xml": (page_2019(), "scan_2.png", (120, 100)),
        },
    )


def test_prima_category_table_is_layout_parser_s():
    table = get_categories("prima")
    assert [(c["id"], c["name"]) for c in table] == list(enumerate(CLASSES, start=1))
    assert len({tuple(c["color"]) for c in table}) == 6
    assert MetadataCatalog.get("prima_train").thing_classes == CLASSES
    assert "prima_val" in DatasetCatalog.list()


def test_page_2010_points_and_region_mapping(tmp_path):
    xml_dir, image_dir = _two_pages(tmp_path)
    records = load_prima_page_xml(xml_dir, image_dir)
    assert [os.path.basename(r["file_name"]) for r in records] == ["00000086.tif", "scan_2.png"]
    page = records[0]
    assert (page["width"], page["height"], page["image_id"]) == (200, 300, 1)
    names = [CLASSES[a["category_id"]] for a in page["annotations"]]
    assert names == [
        "TextRegion",
        "ImageRegion",
        "ImageRegion",
        "ImageRegion",
        "SeparatorRegion",
        "OtherRegion",
        "OtherRegion",
        "TextRegion",
    ]
    assert [a["page_region"] for a in page["annotations"]][:4] == [
        "TextRegion",
        "ImageRegion",
        "GraphicRegion",
        "ChartRegion",
    ]
    heading = page["annotations"][0]
    assert heading["page_region_type"] == "heading"
    assert heading["bbox"] == [10.0, 10.0, 90.0, 30.0] and heading["bbox_mode"] == BoxMode.XYWH_ABS
    assert heading["segmentation"] == [[10.0, 10.0, 100.0, 10.0, 100.0, 40.0, 10.0, 40.0]]
    clipped = page["annotations"][-1]
    assert clipped["bbox"] == [10.0, 200.0, 190.0, 80.0]
    assert max(clipped["segmentation"][0][0::2]) == 200.0


def test_page_2019_points_attribute_nested_regions_and_drops(tmp_path, caplog):
    xml_dir, image_dir = _two_pages(tmp_path)
    with caplog.at_level("WARNING"):
        page = load_prima_page_xml(xml_dir, image_dir)[1]
    regions = [(a["page_region"], CLASSES[a["category_id"]]) for a in page["annotations"]]
    assert regions == [
        ("TableRegion", "TableRegion"),
        ("TextRegion", "TextRegion"),  # nested in the table, counted as in layout-parser
        ("MathsRegion", "MathsRegion"),
        ("LineDrawingRegion", "OtherRegion"),
        ("ChemRegion", "OtherRegion"),
    ]  # TextLine, RegionRefIndexed ignored; 2-point and zero-width separators dropped
    assert "dropped 1 regions with < 3 points and 1 with a zero-width/height box" in caplog.text


@pytest.mark.parametrize(
    "text,message",
    [
        ("<PcGts><Page", "not well-formed XML"),
        ('<?xml version="1.0"?><alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"/>', "not PAGE-XML"),
        (f'<PcGts xmlns="{NS_2019}"><Metadata/></PcGts>', "no <Page> element"),
        (
            f'<PcGts xmlns="{NS_2019}"><Page imageFilename="a.png" imageWidth="x" imageHeight="9"/></PcGts>',
            "imageWidth",
        ),
        (
            f'<PcGts xmlns="{NS_2019}"><Page imageFilename="a.png" imageWidth="9" imageHeight="9">'
            '<TextRegion id="t7"/></Page></PcGts>',
            "TextRegion 't7' has no <Coords>",
        ),
        (
            f'<PcGts xmlns="{NS_2019}"><Page imageFilename="a.png" imageWidth="9" imageHeight="9">'
            '<ImageRegion id="i3"><Coords points="1,1 2,a 3,3"/></ImageRegion></Page></PcGts>',
            "ImageRegion 'i3' has malformed",
        ),
    ],
)
def test_corrupt_page_xml_names_the_file(tmp_path, text, message):
    path = tmp_path / "broken_page.xml"
    path.write_text(text)
    with pytest.raises(CorruptAnnotationError, match="broken_page.xml") as err:
        parse_page_xml(str(path))
    assert message in str(err.value)


def test_missing_image_and_folders(tmp_path):
    xml_dir, image_dir = write_prima(str(tmp_path), {"pc-0001.xml": (page_2010(image="0001.tif"), None, None)})
    with pytest.raises(CorruptAnnotationError, match=r"pc-0001.xml: its image 0001.tif is not in .*Images"):
        load_prima_page_xml(xml_dir, image_dir)
    with pytest.raises(DatasetNotFoundError, match="PAGE-XML folder"):
        load_prima_page_xml(str(tmp_path / "nope"), image_dir)
    # the image converted to PNG, or named after the XML without "pc-", is found
    Image.new("RGB", (200, 300)).save(os.path.join(image_dir, "0001.png"))
    assert load_prima_page_xml(xml_dir, image_dir)[0]["file_name"].endswith("0001.png")


def test_split_is_deterministic_and_disjoint():
    records = [{"image_id": i} for i in range(10)]
    train, val = split_records(records, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert {r["image_id"] for r in train} | {r["image_id"] for r in val} == set(range(10))
    assert split_records(records, 0.2, seed=0) == (train, val)
    assert split_records(records, 0.2, seed=1) != (train, val)


def _run_tool(argv):
    spec = importlib.util.spec_from_file_location("convert_prima_to_coco", "tools/convert_prima_to_coco.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main(argv)


def test_convert_tool_and_registered_splits(tmp_path, monkeypatch):
    pages = {f"pc-{i:04d}.xml": (page_2010(image=f"{i:04d}.tif"), f"{i:04d}.tif", (200, 300)) for i in range(5)}
    root = tmp_path / "PRImA"
    xml_dir, image_dir = write_prima(str(root), pages)
    assert _run_tool(["--xml-dir", xml_dir, "--image-dir", image_dir, "--output-dir", str(root)]) == 0
    train_json, val_json = str(root / "annotations-train.json"), str(root / "annotations-val.json")
    with open(train_json) as f:
        coco = json.load(f)
    assert [c["name"] for c in coco["categories"]] == CLASSES
    assert len(coco["images"]) == 4 and coco["images"][0]["file_name"].endswith(".tif")
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 5, 6}
    assert all(a["area"] > 0 for a in coco["annotations"])
    table = get_categories("prima")
    train = load_layout_coco_json(train_json, image_dir, table)
    val = load_layout_coco_json(val_json, image_dir, table)
    assert len(train) == 4 and len(val) == 1
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in val}
    assert len(train[0]["annotations"]) == 8
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    registered = DatasetCatalog.get("prima_train")
    assert [r["file_name"] for r in registered] == [r["file_name"] for r in train]
    heading = registered[0]["annotations"][0]  # PAGE element and @type survive json and loading
    assert (heading["page_region"], heading["page_region_type"]) == ("TextRegion", "heading")
    assert [a["page_region"] for a in registered[0]["annotations"]][1:4] == [
        "ImageRegion", "GraphicRegion", "ChartRegion"
    ]


def test_image_name_matched_ignoring_case(tmp_path):
    """PRImA's own example page names its image in another letter case than the file."""
    pages = {"pc-00000086.xml": (page_2010(image="PC-00000086.TIF"), None, None)}
    xml_dir, image_dir = write_prima(str(tmp_path), pages)
    Image.new("RGB", (200, 300)).save(os.path.join(image_dir, "pc-00000086.tif"))
    assert load_prima_page_xml(xml_dir, image_dir)[0]["file_name"] == os.path.join(image_dir, "pc-00000086.tif")
    Image.new("RGB", (200, 300)).save(os.path.join(image_dir, "Pc-00000086.tif"))
    with pytest.raises(CorruptAnnotationError, match="matches several files that differ only in letter case") as err:
        load_prima_page_xml(xml_dir, image_dir)
    assert "Pc-00000086.tif, pc-00000086.tif" in str(err.value)


def test_convert_tool_converts_the_rest_and_lists_failures(tmp_path, capsys):
    pages = {f"pc-{i:04d}.xml": (page_2010(image=f"{i:04d}.tif"), f"{i:04d}.tif", (200, 300)) for i in range(3)}
    pages["pc-0003.xml"] = (page_2010(image="0003.tif"), None, None)  # image missing
    pages["pc-0004.xml"] = ("<PcGts><Page", None, None)  # broken XML
    root = tmp_path / "PRImA"
    xml_dir, image_dir = write_prima(str(root), pages)
    argv = ["--xml-dir", xml_dir, "--image-dir", image_dir, "--output-dir", str(root), "--val-fraction", "0"]
    assert _run_tool(argv) == 1
    with open(root / "annotations-all.json") as f:
        assert [img["file_name"] for img in json.load(f)["images"]] == ["0000.tif", "0001.tif", "0002.tif"]
    err = capsys.readouterr().err
    assert "2 of 5 pages failed and were not converted:" in err
    assert "pc-0003.xml: its image 0003.tif is not in" in err and "pc-0004.xml: not well-formed XML" in err
