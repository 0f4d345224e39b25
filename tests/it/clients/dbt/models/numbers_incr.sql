{{ config(materialized='incremental', unique_key='id') }}
-- An incremental model (delete+insert on `id`): a second run with
-- `--vars '{mult: 1000}'` rewrites only the rows from the newest id on.
select id, name, id * {{ var('mult', 100) }} as score from {{ ref('stg_numbers') }}
{% if is_incremental() %}
where id >= (select max(id) from {{ this }})
{% endif %}
