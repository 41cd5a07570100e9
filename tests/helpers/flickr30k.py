"""Flickr30k Entities annotations in the publisher's format, for the reader tests."""

FLICKR_XML = """<annotation><filename>{id}.jpg</filename>
<size><width>200</width><height>100</height><depth>3</depth></size>
<object><name>11</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>51</xmax><ymax>61</ymax></bndbox></object>
<object><name>11</name><name>12</name><bndbox><xmin>101</xmin><ymin>1</ymin><xmax>151</xmax><ymax>41</ymax></bndbox></object>
<object><name>13</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>11</xmax><ymax>11</ymax></bndbox></object>
<object><name>14</name><nobndbox>1</nobndbox></object>
<object><name>0</name><scene>1</scene></object>
</annotation>"""
FLICKR_SENTENCES = (
    "[/EN#11/people A Man] rides [/EN#12/animals a horse] near [/EN#13/other a Rock] .\n"
    "[/EN#11/people The rider] and [/EN#14/other the wind] .\n"
)
