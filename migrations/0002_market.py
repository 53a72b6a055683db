from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='CandleRow',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('symbol', fields.CharField(max_length=21)),
                ('interval', fields.CharField(max_length=3)),
                ('open_time', fields.BigIntField()),
                ('open', fields.DecimalField(max_digits=30, decimal_places=12)),
                ('high', fields.DecimalField(max_digits=30, decimal_places=12)),
                ('low', fields.DecimalField(max_digits=30, decimal_places=12)),
                ('close', fields.DecimalField(max_digits=30, decimal_places=12)),
                ('volume', fields.DecimalField(max_digits=38, decimal_places=12)),
                ('trades', fields.IntField()),
            ],
            options={'table': 'candles', 'app': 'models', 'unique_together': (('symbol', 'interval', 'open_time'),), 'pk_attr': 'id', 'table_description': 'One closed OHLCV candle.'},
            bases=['Model'],
        ),
    ]
