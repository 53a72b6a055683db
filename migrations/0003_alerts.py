from tortoise import migrations
from tortoise.migrations import operations as ops
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_market')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Alert',
            fields=[
                ('seq', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('id', fields.UUIDField(default=uuid4, unique=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.CASCADE)),
                ('symbol', fields.CharField(max_length=21)),
                ('condition', fields.CharField(max_length=10)),
                ('threshold', fields.DecimalField(max_digits=30, decimal_places=12)),
                ('window_s', fields.IntField(null=True)),
                ('repeat', fields.BooleanField(default=False)),
                ('cooldown_s', fields.IntField(default=300)),
                ('note', fields.CharField(default='', max_length=200)),
                ('status', fields.CharField(default='active', max_length=10)),
                ('trigger_count', fields.IntField(default=0)),
                ('last_triggered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_fired_ts', fields.BigIntField(null=True)),
                ('crossed_back', fields.BooleanField(default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'alerts', 'app': 'models', 'indexes': [Index(fields=['user_id', 'status']), Index(fields=['status'])], 'pk_attr': 'seq'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Notification',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='notifications', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=32)),
                ('title', fields.CharField(max_length=200)),
                ('body', fields.CharField(max_length=1000)),
                ('data', fields.JSONField(default=dict, encoder=JSON_DUMPS, decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('read_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notifications', 'app': 'models', 'indexes': [Index(fields=['user_id', 'created_at']), Index(fields=['user_id', 'read_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OutboxItem',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('kind', fields.CharField(max_length=10)),
                ('notification', fields.ForeignKeyField('models.Notification', source_field='notification_id', db_constraint=True, to_field='id', related_name='outbox', on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='outbox', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('due_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('done_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('failed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.CharField(default='', max_length=200)),
            ],
            options={'table': 'outbox', 'app': 'models', 'indexes': [Index(fields=['done_at', 'failed_at', 'kind', 'due_at'])], 'pk_attr': 'id', 'table_description': "One delivery still owed: ``publish`` (the user's socket channel) or ``webhook``."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookAttempt',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='webhook_attempts', on_delete=OnDelete.CASCADE)),
                ('delivery_id', fields.UUIDField()),
                ('notification_id', fields.UUIDField()),
                ('attempt', fields.IntField()),
                ('url', fields.CharField(max_length=2048)),
                ('status_code', fields.IntField(null=True)),
                ('ok', fields.BooleanField()),
                ('error', fields.CharField(default='', max_length=200)),
                ('duration_ms', fields.IntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_attempts', 'app': 'models', 'indexes': [Index(fields=['user_id', 'id'])], 'pk_attr': 'id', 'table_description': "One POST to a user's webhook (the delivery log)."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='User',
            name='webhook_secret',
            field=fields.CharField(null=True, max_length=64),
        ),
    ]
