from piccolo.columns import ForeignKey, Varchar
from piccolo.columns.base import OnDelete
from piccolo.table import Table

from core.tables import Client


class SampleMark(Table, tablename="sample_mark"):
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade)
    label = Varchar(length=64)
